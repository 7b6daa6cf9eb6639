"""The run folder, the one contract between the studio, the CLI and the trainer (docs/ARCHITECTURE.md).

layout   the files by name, paths, checkpoint lookup, the config a run or a checkpoint was trained with
events   events.jsonl: writing, reading new lines, the resume rule
status   status derivation and run summaries
watch    following one run as it grows (the dashboard)
control  create, launch, request a checkpoint, stop, delete
"""
