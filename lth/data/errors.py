"""The one exception the data layer raises.

Every problem with data (a missing or corrupt file, an unknown dataset name, a TFDS failure) ends
in a `DataError` whose message says which dataset, where it looked, what was wrong and how to get
the data, so that the entry point can print it without a traceback.
"""


class DataError(Exception):
    """Data cannot be loaded; the message explains why and how to fix it."""


DATA_DIR_ORIGIN = "the data directory comes from paths.data_dir, else $LTH_DATA_DIR, else ~/.cache/lth/datasets"

# The datasets read from files under the data directory (no TFDS needed).
# imagenet_standin is generated (lth.data.imagenet_standin).
BUILTIN = ("mnist1d", "mnist", "fashion_mnist", "cifar10", "sentiment", "trec", "20newsgroups", "imagenet_standin")


def unknown_dataset_message(name: str, source: str = "auto") -> str:
    """The error for a name no loader knows: it names the setting, the value and the built-ins."""
    builtins = ", ".join(BUILTIN)
    if source == "files":
        return (
            f"dataset.name={name!r} is not a built-in dataset ({builtins}); dataset.source=files reads only these "
            f"(use dataset.source=tfds or auto for a TFDS dataset)"
        )
    if source == "tfds":
        return f"dataset.name={name!r} is not a TFDS dataset (dataset.source=tfds; the built-in datasets are {builtins})"
    return f"dataset.name={name!r} is neither a built-in dataset ({builtins}) nor a TFDS dataset"
