#include <capstone/capstone.h>

// The target of a direct jump or call (`jmp rel`, `jcc rel`, `call rel`, `loop`,
// `jrcxz`), read from the decoded detail; 0 for anything else. A static inline helper
// because cs_detail's x86 operands are a union inside a fixed array that Swift sees as
// a tuple.
static inline int swpatch_direct_branch_target(const cs_insn *insn, uint64_t *target) {
  const cs_detail *detail = insn->detail;
  if (!detail) return 0;
  int branch = 0;
  for (int i = 0; i < detail->groups_count; i++)
    if (detail->groups[i] == CS_GRP_JUMP || detail->groups[i] == CS_GRP_CALL) branch = 1;
  if (!branch || detail->x86.op_count != 1 || detail->x86.operands[0].type != X86_OP_IMM)
    return 0;
  *target = (uint64_t)detail->x86.operands[0].imm;
  return 1;
}
