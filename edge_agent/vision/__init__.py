"""Pure-numpy vision helpers shared by every backend: preprocess, anchors, decode, NMS, crops, alignment."""
