"""Read a CelebA copy with `load_celeba` and print the growth of peak RSS during the read.

    python robustness_parse_rss.py COPY_DIR

Prints one JSON line: the outcome ("parsed" or the exception's type name), the
message length and start, and the growth of the peak resident set size
(`ru_maxrss`) from just before the read to just after it, in bytes. The test
writes the copy beforehand, so that writing it does not raise the peak that
this process measures.
"""

import json
import resource
import sys

from lnet_anet_tf.data import celeba


def main() -> None:
    root = sys.argv[1]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        celeba.load_celeba(root)
        outcome, message = "parsed", ""
    except Exception as error:  # the test checks the type
        outcome, message = type(error).__name__, str(error)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    # ru_maxrss is in kilobytes on Linux.
    print(json.dumps({
        "outcome": outcome,
        "message_length": len(message),
        "message_start": message[:200],
        "rss_growth_bytes": (after - before) * 1024,
    }))


if __name__ == "__main__":
    main()
