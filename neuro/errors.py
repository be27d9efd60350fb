"""The one error type of ``neuro``: bad input, with a message that says what to do."""


class NeuroError(ValueError):
    """Bad input to a ``neuro`` function (wrong shape, mismatched images, empty ROI, NaN, unknown method).

    The message is one line and names the fix; applications print it instead of a traceback.
    """
