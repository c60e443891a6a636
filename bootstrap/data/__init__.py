"""The data step: stage each data item on scratch, from a folder, an archive or a URL.

``stage.stage_data`` is the way in. Archives are checked member by member (``memberguard``)
and extracted by tarfile/zipfile (``extract``) or, for tar, by GNU tar fed only checked
members (``gnutar``); ``landing`` builds the stage in a private folder and merges it into place.
"""
