"""The shipped example models and their held-out data (``models/``, ``data/``), installed with the
package as package data so that ``porting example`` works from a wheel, outside a checkout.
No code lives here: ``parity/shipped.py`` reads these files; ``tools/`` (not installed) rebuilds them.
"""
