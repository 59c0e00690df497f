"""How far a synthetic dataset is from real data of the same kind (`factory compare`,
and `output.reference` in a run's report). measure.py runs it; the other modules each
compute one family of numbers, and page.py draws them."""
