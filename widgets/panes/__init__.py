"""The studio's tabs, one pane each: 1 Data, 2 Model, 3 Train, 4 Runs, 5 Playground."""
