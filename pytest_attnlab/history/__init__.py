"""`python -m pytest_attnlab history`: every gated metric over time, across GPUs and decode paths, in one page
(runs.py reads the runs, series.py marks the changes, tables.py and page.py draw them, cli.py is the command)."""
