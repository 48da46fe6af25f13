// A library of the `places` fixture's own, linked at start (-lshared, rpath $ORIGIN).
__attribute__((noipa)) int shared_value(int x) { return x + 1000; }
