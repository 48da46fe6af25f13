print("swpatch")
