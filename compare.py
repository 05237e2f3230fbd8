"""Compare signature files side by side: python compare.py a/signature.npz b/signature.npz [--names A B]."""

from memsig.tasks.compare import main

if __name__ == "__main__":
    main()
