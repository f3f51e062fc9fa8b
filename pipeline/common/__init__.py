"""What every layer shares, and nothing of any one stage: the box type (``box``), the
status codes and their counters (``codes``), the one storage entry point (``storage``:
a URI + options -> an fsspec filesystem and path), the one retry helper (``retries``),
credential masking (``secrets``) and a thread map (``parallel``).

May import: nothing of the package but each other (the configuration imports these, so
they cannot import it).
"""
