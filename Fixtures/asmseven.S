// seven, written in assembly: gas describes it in DWARF with no prototype (language
// "assembler", return type DW_TAG_unspecified_type), as glibc's syscall wrappers are.
	.text
	.globl	seven
	.type	seven, @function
seven:
	mov	$7, %eax
	nop
	nop
	ret
	.size	seven, .-seven
	.section .note.GNU-stack,"",@progbits
