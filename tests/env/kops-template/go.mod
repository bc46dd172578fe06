module elemento.local/kops-template

go 1.24
