"""What a run decided: the plan's rows, reasons, loads and summary, and the deals that follow it."""
