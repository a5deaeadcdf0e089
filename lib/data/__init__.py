"""The data layer: the manifest, storage (the only fsspec user), dataset readers, embedders
and the content-addressed cache."""
