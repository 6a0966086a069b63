"""data: audio in, the shared cache, a trial's batches.

`audio` (decoding one file), `layouts` (finding clips on disk: IRMAS layouts, folders, PNGs), `cache`
(every clip decoded once per dataset, under a lock; its key), `feed` (a trial's split and batches on
its device), `demo` and `synth` (audio rendered in IRMAS's layout for the demo and the tests).
Below: config, sweepdir.
"""
