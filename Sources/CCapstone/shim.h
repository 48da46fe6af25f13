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

// Where a RIP-relative memory operand's 32-bit displacement sits in the instruction
// (its offset from the first byte), 0 when the instruction has none. The displacement
// is relative to the end of the instruction, so moving the instruction changes it.
static inline int swpatch_rip_disp_offset(const cs_insn *insn) {
  const cs_detail *detail = insn->detail;
  if (!detail) return 0;
  for (int i = 0; i < detail->x86.op_count; i++) {
    const cs_x86_op *op = &detail->x86.operands[i];
    if (op->type == X86_OP_MEM && op->mem.base == X86_REG_RIP)
      return detail->x86.encoding.disp_offset;
  }
  return 0;
}
