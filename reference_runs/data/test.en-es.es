el argumento de 'sizeof' en la llamada %qD es la misma expresión que el destino; ¿pretendía desreferenciarla?
VarP
Operando equivocado para una instrucción load <%s>
La referencia de matriz en %L está fuera de los límites (%ld > %ld) en la dimensión %d
Tiene instalado %PRODUCTNAME %VERSION
No usa la instrucción personalizada fcmplts.
Movidos %ju de %ju sectores (%.0f%%).
Convertir texto en tabla
desbordamiento de la pila
Versión: 0x%lx
Cheroqui
no se entregó una llave de config para --config-env
No se puede relajar la diferencia
.sblock se puede utilizar únicamente para secciones inicializadas
ejecutar tareas basadas en el estado del repositorio
El % mayor
Revisor gramatical remoto LanguageTool
Parámetro de inicio de Java
encabezado fontdir
Oculta la barra de desplazamiento del marco flotante.
sfx
Defina el valor del cian según el modelo de colores CMYK.
Para imprimir un intervalo de páginas, indíquelas con un formato como este: 3-6. Para imprimir páginas individuales, sírvase de un formato como 7;9;11. Es posible imprimir una combinación de intervalos de páginas y páginas individuales si utiliza formatos como 3-6;8;10;12.
Revertir
Clisteno (Plains, silábico)
fflush falló
Altura individual
Tamaño de sector (lógico/físico): %lu bytes / %lu bytes
Indique el tiempo de retardo antes de repetir el efecto.
Sangría en numeración
Teléfono trabajo
Hay un segmento exportador dentro de %s, pero es demasiado pequeña (%d)
Define la configuración predeterminada para mostrar objetos en los documentos de texto, así como para los elementos de ventana.
reubicaciones que no son dinámicas se refieren al símbolo dinámico %s
la llamada gimple no tiene objetivo
no se pudo escribir índice
Más pequeño
** GOT
¡Registro br_mem antes del registro de región!
Columnas/filas ocultas
Caracteres, sin espacios:
(1 carácter como mínimo)
Invierte el valor del argumento.
%PRODUCTNAME Chart
se descarta el tamaño de `tab' inválido de la variable de entorno TABSIZE: %s
Decimales
el atributo %qE se aplica solamente a funciones
La matriz de datos X como base para la regresión.
sistema de correo
Al crear o mover objetos
Coordenada Y:
Formas de símbolos
(opcional)
Este no es un documento de texto
se sugieren paréntesis alrededor de '+' para un operando de '&'
%B: Aviso: La instrucción Arm BLX apunta a la función Arm «%s».
Registros restaurados:
no se especificó %qE en el %qs que lo contiene
Para:
Los punteros son de 64-bit.
Carácter en modo palabra
Rúnico
Libreta de direcciones de KDE
no coinciden los operandos/tamaños
generar partes de una carta de presentación basadas en la descripción de la rama
Estilo de tabla predeterminado
búsqueda pista a pista
Escriba un nombre para el mapa de bits externo:
La declaración CONTAINS en %C ya está contenida en una unidad de programa
el argumento debe tener tipo complejo
conteo malogrado en %s
'||' múltiples en la misma línea
Ordenada
Especificador de acceso duplicado en %C
no se puede revertir-aplicar un parche binario sin el fragmento revertido a '%s'
Ancla la selección a un carácter.
Impresora predeterminada
el tercer argumento debe ser un inmediato de 8-bit
Omnibarra:
Se ignoraron las celdas sin texto.
Los cambios afectan a toda la tabla
usar [<prefijo>] en lugar de [PATCH]
HEAD (sin rama)
ioctl(%d, RTC_EPOCH_SET, %lu) para %s fue bien.
Índice de opción. Es un índice de las opciones para ignorar posibles.
cgid
Por omisión, prueba -r, -s, -f y -q en orden hasta que funcione.
detrás %d
Insertar numeración
<desconocido>: 0x%x
silencioso
se traslada a `%sp'
corrige el orden de las particiones
Sintaxis no válida en el modo de direccionamiento Externo
Estilo inicial:
Introduzca el nombre del marco donde desee que se abra el archivo enlazado, o bien, seleccione un marco predefinido de la lista. Si deja este cuadro en blanco, el archivo enlazado se abre en la ventana actual del explorador.
artam: %u, a0: 0x%08x
Seleccione esta opción para generar un archivo PDF que se muestre en una ventana con la página inicial entera.
El valor inmediato no está en el límite de 4 bit sin signo: %ld
Negativo:
segmento de ruta '..' inválido
Circunflejo ancho
la especificación %qs tiene un '%%0%c' no válido
no se puede usar %qE como un puntero miembro, porque es de tipo %qT
se necesita un subcomando
'%s' y los argumentos de especificación de ruta no pueden ser usados juntos
Advierte de la herencia múltiple directa.
La ruta $(ARG1) no existe.
%qD no es una función plantilla miembro
Mi texto automático
%PRODUCTNAME no encontró una configuración de correo electrónico funcional.
%PRODUCTNAME Writer
ATENCIÓN: esta acción puede haber provocado que las referencias al área eliminada no se hayan restaurado.
se inserta «%s» en la distribución de de dispersión de cadenas: %s
referencia los snapshots para seleccionar los commits de bitmap
%qT no tiene un miembro llamado %qE; ¿quiso decir %qE?
B0 (ISO)
Dirección de destinatario
Inglés, ortografía Oxford (Reino Unido)
10.º nivel de esquema
atención: ancho %lu inválido; se usará %d en su lugar
Activa las cargas de elevación de punteros condicionales.
%s dijo inesperadamente: '%s'
objeto '%s' entregado no es válido.
(Notas)
error interno: error fuera de rango
Advierte de constructores heredados de C++11 cuando la base tiene constructor variádico.
se trata de instanciar %qD
Bajo alemán
se registra «%s» como un pragma y como un espacio de nombres de pragma
Configuración especial
Ejecutar
5 flechas
no se puede abrir el fichero de volcado de insn final %qs: %m
Introduzca la anchura de columna que desea utilizar.
Tipo de partición no válido `%c'.
Fax
%B: memoria agotada en propiedad _bfd_elf_get_property
Configuración del servidor de salida (SMTP)
Cargas literales
Elija el tipo de carta y el diseño de la página
(ARM solo) Arreglar binarios para erratum Cortex-A8
Lima oscuro
incapaz de ubicar datos para orden de carga %#x
%X%P: no se pueden crear secciones dinámicas %E
ESREF
offset de zona horaria inválido
Sectores de círculo
basura tras operando %u de '%.*s'
%B: índice simbólico %ld ilegal en reubicaciones
Refrescando index
El parámetro KIND de %s en %L debe ser una expresión de inicialización
El modelo no es lineal.
Tabla siguiente
se utiliza el rango [%E, %E] para el argumento de la directiva
El texto dentro del que se buscará.
Predefinido
Proceso interrumpido por el usuario.
Nota: todas las órdenes pueden escribirse en mayúsculas o minúsculas
Valor actual:
el registro es el mismo que la base de retroescritura
FRACCIÓN
Devuelve el promedio de todas las celdas de un área de una base de datos cuyos contenidos coinciden con los criterios.
Crea columnas de anchura uniforme, sin importar la posición del separador de columnas.
Amarillo, 45 grados, cruzado
se especificó un tipo agregado %qE ilegal para la variable de instancia %qs
Intervalo:
SGI xlv
fallo al analizar la lista de --table-hide
no se admite el tipo de argumento %qT para simd
No reconocida la opción: -hidden
esperaba coma tras modo registro
Individual
Construir un objeto árbol de un texto en formato ls-tree
la indirección no accederá a un objeto de tipo incompleto %qT en la declaración
Escriba el texto que desee mostrar después del número del capítulo.
Tipo de virtualización:
Ampliaciones del AFI
%P: copiar reubicación frente a «%T» protegido es peligroso
Objeto de OpenOffice.org Writer/Web 1.0
La tasa de descuento para un período.
el tipo de devolución puede ser un candidato para un atributo de formato
Cter.: destaque
El programa está ubicado por completo en la parte baja de 64k de memoria.
valor fuera de límite
inicialización por valor del tipo de referencia %qT
Etíope
commit desconocido %s
DEF_INTERNAL_INT_FN (%s) no tiene ninguna función interna asociada
Campo formateado
permita que -s y -t funcionen con objetos rotos o corruptos
tamaño del paso: %zu bytes
El componente allocatable %s en %L de tipo LOCK_TYPE debe tener una codimensión
Preevaluación
¿Quiere guardar los cambios?
no agregar, solo actualizar el índice
conjunto: el número no está en el límite 0..4294967295
Seleccione el bloque de dirección
es la segunda matriz o área de valores.
Calcular subíndice abajo
