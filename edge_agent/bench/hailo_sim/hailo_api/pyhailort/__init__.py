"""Mirror of ``hailo_platform.pyhailort`` (the exception module lives in ``pyhailort.pyhailort``)."""
