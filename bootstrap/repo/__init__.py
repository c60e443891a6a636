"""The repo step: clone or update the training repository (or copy a plain folder), with git
kept safe (tokens never logged or stored) and its progress shown.
"""
