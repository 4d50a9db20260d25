"""Write pretrained weights where consumers read them: the nnU-Net pretrained-weights file
(:func:`monai_ssl_plugin.export.nnunet.export_nnunet`). Reading, checking and loading weights is the
transfer layer's (:mod:`monai_ssl_plugin.transfer`)."""
