"""What a run tells: write-time statistics, report.json/html, the console's progress and summary."""
