"""Meshes from Gaussians (``esd-gs export --to .glb|.obj``, ``generate --mesh``): ``field.py`` evaluates the
Gaussians' opacity and colour on a grid, ``extract.py`` turns it into a cleaned, decimated, vertex-coloured mesh in
glTF's axes. Generic steps are libraries': marching cubes (scikit-image), hole filling (SciPy), cleaning, decimation
and file formats (trimesh, fast-simplification)."""
