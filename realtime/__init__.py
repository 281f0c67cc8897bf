"""slstt.realtime: the live spot-then-recognise micro-expression detector (capture, face tracking,
causal spotting, asynchronous recognition, events, overlay, analyze, demo)."""
