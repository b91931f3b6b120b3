/*
 * PVH entry for the vinfra test guests (see ../ABI.md).
 *
 * The VMM (or QEMU's PVH loader) jumps to pvh_start32 in 32-bit protected mode, paging
 * off, with %ebx = guest-physical address of struct hvm_start_info. We load our own GDT,
 * point CR3 at page tables that are fully built at link time (an identity map of the
 * first 4 GiB with 2 MiB pages, so no guest instructions are spent filling them: guest
 * code runs emulated and slowly on nested KVM), enable PAE + EFER.LME + paging, far-jump
 * to 64-bit code, set up a stack and call rt_main(start_info).
 */

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define MSR_EFER 0xc0000080
#define EFER_LME (1 << 8)
#define CR0_PE (1 << 0)
#define CR0_WP (1 << 16)
#define CR0_PG (1 << 31)
#define CR4_PAE (1 << 5)
#define SEL_CODE64 0x08
#define SEL_DATA 0x10

    .section .note.Xen, "a", @note
    .balign 4
    .long 4                         /* namesz: "Xen\0" */
    .long 8                         /* descsz: entry address, 8 bytes like Linux */
    .long XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .balign 4
    .quad pvh_start32
    .balign 4

    .section .text.entry, "ax"
    .code32
    .globl pvh_start32
pvh_start32:
    cli
    cld
    mov %ebx, %esi                  /* keep the start-info pointer */
    lgdt gdt_ptr
    mov $SEL_DATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov $pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $CR4_PAE, %eax
    mov %eax, %cr4
    mov $MSR_EFER, %ecx
    rdmsr
    or $EFER_LME, %eax
    wrmsr
    mov %cr0, %eax
    or $(CR0_PE | CR0_WP | CR0_PG), %eax
    mov %eax, %cr0
    ljmp $SEL_CODE64, $long_mode

    .code64
long_mode:
    mov $SEL_DATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    mov $stack_top, %rsp
    mov %esi, %ebx                  /* zero-extends */
    /* .bss is small; one rep stosb clears it (loaders zero it too, but be sure). */
    mov $__bss_start, %rdi
    mov $__bss_end, %rcx
    sub %rdi, %rcx
    xor %eax, %eax
    rep stosb
    mov %rbx, %rdi
    call rt_main
    /* rt_main does not return; if it does, exit with its value. */
    mov $0xf4, %dx
    out %al, %dx
1:  cli
    hlt
    jmp 1b

    .section .rodata
    .balign 8
gdt:
    .quad 0                         /* null */
    .quad 0x00af9a000000ffff        /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00cf92000000ffff        /* 0x10: flat data */
gdt_end:
gdt_ptr:
    .word gdt_end - gdt - 1
    .long gdt

    /* Page tables, complete at link time. */
    .section .data.pagetables, "aw"
    .balign 4096
pml4:
    .quad pdpt + 0x3                /* present, writable */
    .fill 511, 8, 0
pdpt:
    .quad pd + 0x0000 + 0x3
    .quad pd + 0x1000 + 0x3
    .quad pd + 0x2000 + 0x3
    .quad pd + 0x3000 + 0x3
    .fill 508, 8, 0
pd:
    /* 2048 entries of 2 MiB: present, writable, PS; the 4th GiB (MMIO hole) uncached. */
    .set i, 0
    .rept 1536
    .quad (i << 21) | 0x83
    .set i, i + 1
    .endr
    .rept 512
    .quad (i << 21) | 0x83 | 0x18
    .set i, i + 1
    .endr

    .section .noinit.stack, "aw", @nobits
    .balign 16
stack_bottom:
    .skip 32768
stack_top:
