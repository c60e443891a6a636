"""The GNU tar fast path: we parse and check every member, and GNU tar writes the files."""
