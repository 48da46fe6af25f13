// The second `static int helper` of the internals fixture (sympos 2 in its .symtab).
__attribute__((noipa)) static int helper(int x) { return x + 2; }

int other_value(int x) { return helper(x); }
