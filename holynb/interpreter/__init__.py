"""The code interpreter: ``CodeInterpreter`` (``code_interpreter``) sends code to a model for
model-side execution (``protocol``: the prompt and how a reply is read), shows the results
(``execution``) and can check them in a local sandbox (``sandbox``)."""
