"""Corpora (raw text directories, gettext catalogs, tensorflow-datasets) and the preprocessed token arrays."""
