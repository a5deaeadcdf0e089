"""The data layer: the manifest (``manifest``, ``validation``, ``secrets``), storage (``storage``:
the only fsspec user), dataset readers (``readers``, ``formats``), the Parquet writer
(``parquet``), embedders (``embedders``, ``embedding``, ``devices``) and the content-addressed
cache (``cache``). See docs/ARCHITECTURE.md."""
