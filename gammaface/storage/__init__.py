"""Where a workdir's files live (`store`: a local folder or an object store behind one
interface, and the mirror that stages a remote one) and the workdir's lock (`lock`)."""
