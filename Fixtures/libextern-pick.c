// Calls `helper`, of which the internals fixture has two static definitions: the patch
// file picks one with "externs": {"helper": {"sympos": N}}. compute=22000 with
// sympos 1 (x+1), 23000 with sympos 2 (x+2).
extern int helper(int);

int compute_pick(int x) { return helper(x) * 1000; }
