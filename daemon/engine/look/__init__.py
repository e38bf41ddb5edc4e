"""Look: how a prompt is dressed before it is drawn (styles, appearance tags, reference images)."""
