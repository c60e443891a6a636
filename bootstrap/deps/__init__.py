"""The install step: read a repo's requirement files and install them into the training
interpreter, holding the preinstalled packages (torch and friends) at their versions.
"""
