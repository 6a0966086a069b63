"""The sweep report's figures (PNG, Agg): `draw.make_plots` decides which a sweep gets and draws
them, `curves` and `params` are the figures, `lr_find` the LR finder's, and `figure` the helpers
they all share. Nothing here imports pyplot or torch; this file imports nothing at all, so that
importing one module of the package never drags in the others.
"""
