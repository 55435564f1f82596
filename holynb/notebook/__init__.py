"""What a notebook shows: the ``%%llm`` magics (``magics``, ``magic_errors``,
``prompt_template``), the streaming widget and plain-text view (``display``), several models
side by side (``side_by_side``) and what a magic needs from a view (``views``)."""
