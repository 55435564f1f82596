"""The providers' Batch API: build, check and split the request files (``files``), create and
follow a job (``jobs``), keep it on disk (``manifest``), read its results (``results``) and
check what the provider sends before it is believed (``untrusted``)."""
