"""The `export-tasks` and `import-tasks` commands: a round trip with Label Studio and doccano."""
