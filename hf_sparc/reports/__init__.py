"""Run folders: report.md / report.json, plots and unit notes, written one way."""
