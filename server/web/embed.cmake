# Turns a file into a C source defining `const unsigned char NAME[]` and `const unsigned long
# NAME_len`. Run with: cmake -DIN=file -DOUT=file.c -DNAME=sym -P embed.cmake
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n" body "${body}")
file(WRITE "${OUT}" "/* generated from ${IN} by server/web/embed.cmake; do not edit */\n"
     "const unsigned char ${NAME}[] = {\n${body}0x00};\n"
     "const unsigned long ${NAME}_len = ${len};\n")
