# Marks includes/ as a Cython package so that modules can cimport the C declarations in it.
