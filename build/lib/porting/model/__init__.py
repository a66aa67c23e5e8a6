"""The transformer, its positions, its tensor layout, and loading a converted directory into it."""
