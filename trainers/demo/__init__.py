"""The demo's backend, beside the Gradio app in `spaces_demo/app.py`: `predictor` (inference, no Gradio),
`inputs` (checks of what a visitor uploads), `drawing` (heat maps) and `command` (`xmodal demo`)."""
