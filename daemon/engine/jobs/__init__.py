"""Jobs: from a reply to images waiting for a decision (pipeline, actions, swipes, approval)."""
