"""Figures of the project: plotting only, reading results through the public API (no numerics of their own).

Every figure is saved through :func:`figures.plotting.save_figure` (atomic PNG). ``figures`` is a script
package: it may import ``dynamics`` and ``theory``; library code (``dynamics`` outside ``dynamics.cli``, and
``theory``) never imports it.
"""
