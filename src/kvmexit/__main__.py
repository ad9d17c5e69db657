# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
from .cli import main

if __name__ == "__main__":
    main()
