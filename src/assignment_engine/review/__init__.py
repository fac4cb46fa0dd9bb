"""A saved plan read, never solved again: diff, report, explain and the CRM update files."""
