// Replacement for the `named` fixture's library function (ObjectNamesTests).
__attribute__((noipa)) int named_value_v2(int x) { return x + 80; }
