"""The studio: the Textual app (app.py), its tabs (panes/), its full-screen views (screens/), and the small
reusable widgets they are built from (this folder, one per file). Never imports torch."""
