"""Images on disk: layer storage and the overlay mounts that turn layers into root filesystems."""
