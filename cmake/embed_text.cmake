# Turns a text file into a C++ source that defines one std::string_view holding it, as a raw
# string literal. Run as a script at build time (cmake -P), so a clean clone needs nothing but
# CMake: no xxd, no Python.
#   -DIN=<file>  -DOUT=<generated .cpp>  -DNAME=<C++ identifier in namespace sidecar>
if(NOT IN OR NOT OUT OR NOT NAME)
  message(FATAL_ERROR "embed_text.cmake needs -DIN=, -DOUT= and -DNAME=")
endif()
file(READ "${IN}" text)
# The literal ends at the first )sidecar_embed" in the text, so such text cannot be embedded.
set(delimiter "sidecar_embed")
string(FIND "${text}" ")${delimiter}\"" clash)
if(NOT clash EQUAL -1)
  message(FATAL_ERROR "${IN} contains )${delimiter}\", which would end the raw string literal")
endif()
file(WRITE "${OUT}.tmp"
  "// Generated from ${IN} by cmake/embed_text.cmake at build time; edit that file instead.\n"
  "#include <string_view>\n\n"
  "namespace sidecar {\n"
  "extern const std::string_view ${NAME};\n"
  "const std::string_view ${NAME} = R\"${delimiter}(${text})${delimiter}\";\n"
  "} // namespace sidecar\n")
file(RENAME "${OUT}.tmp" "${OUT}")
