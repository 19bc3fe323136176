"""Holoscan operators of the sacral-tumour application: thin shells around ``core`` functions.

Every operator receives and emits one :class:`core.run_state.RunState` on its ``state`` port (the
segmentation operators fan out from the volume and fan in at post-processing).
"""
