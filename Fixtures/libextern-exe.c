// Replaces the internals fixture's compute with code that calls its static scale and
// reads and writes its static counter: compute=4200 counter=1, 2, ...
extern int scale(int);
extern volatile int counter;

int compute_ext(int x) {
  counter += 1;
  return scale(x) * 100;
}
