Mejorar bordes
Devuelve la distribución t.
ausente .proc
Proteger registros
El entero más pequeño devuelto.
Escribe un mensaje a todos los usuarios.
Seleccione los paréntesis para las entradas de bibliografía.
fallo al analizar la lista de CPUs: %s
directiva de preprocesamiento #%s inválida
%B(%A): aviso: acceso sin alinear al símbolo «%s» en el área de datos small.
utilizó `fp=64' con un ABI de 32-bit
error de entrada en el número de bloques defectuosos en la línea %d
Id entero (N) de la instrucción personalizada fsqrtd.
demasiados argumentos para una operación de renombramiento
desbordamiento de entero complejo en expresión de tipo %qT da como resultado %qE
Aquí puede crearse un documento nuevo al cual apuntará el enlace nuevo.
Conflicto
Desproteger estructura de libro
Activa la división de loads inmediatos de 32 bit en partes low / high.
%B: Tipo de reubicación %d desconocido
Actualizar intervalo
Asume que se pueden direccionar las etiquetas y símbolos usando direcciones absolutas de 16 bits.
4 flechas grises
Hipervisor:
no se crea el enlace duro %s al directorio %s
Cuadro de grupo
no se puede encontrar EMH en el primer registro GST
nombre de sección inválido '%s'
PERMUTACIONESA
Tamaño TamEnt Info Alin
La celda $(ARG1) contiene una cadena que es más larga en el conjunto de caracteres de destino seleccionado «$(ARG2)» que la anchura del campo proporcionado.
invalida operador desplazado
Establece la alineación de los símbolos de numeración. Seleccione «Izquierda» para alinear el símbolo iniciando directamente en la posición «Alineado a». Seleccione «Derecha» para alinear el símbolo de numeración finalizando directamente antes de la posición «Alineado a». Seleccione «Centrado» para centrar el símbolo respecto a la posición «Alineado a».
Parámetro '%s' de dirstat desconocido
Crear consulta en modo de diseño…
Muestra la ayuda de opciones
Muestra la marca de la línea Estructura.
no se puede determinar el tamaño de la instrucción Thumb. Use en su lugar .inst.n/.inst.w
Etiqueta desconocida: %d
Las columnas siguientes están ocultas. Marque los campos que quiera mostrar y pulse en Aceptar.
fallo al analizar el tamaño de página
Seleccione los tipos de objetos que desee incluir en un índice de objetos.
Error al escribir el archivo.
¡%s se ha vuelto colgante!
Restablecer presentación predeterminada
tipo de objeto
Avisa si una declaración local oculta una variable de instancia.
Combina las imágenes en una sola.
renombrado
ia/iya (piano/piyano)
Avisa cuando se aplica sizeof a parámetros declarados como array.
Error: desbordamiento de la cadena
anchura de campo en formato strfmon
<dispo> especifica dispositivo(s) para sondear (lo predefinido: todos los dispositivos)
ausente la extensión de la arquitectura
refmap
profundidad negativa en --deepen no es soportada
cambia el número de sectores adicionales por cilindro
%s:%d:%d: %s
El valor es un número, una referencia a una celda que contenga un número o una fórmula que produzca un número.
Botón del ratón presionado
no coincide la opción específica del objetivo
Extrusión hacia el norte
Muestra el nombre de archivo de la plantilla que se especificó en la pestaña Transformación.
la restriccion de operando contiene '+' ó '=' en una posición incorrecta
no se admite %s pero se requiere para %s en %s
El nivel épsilon no es válido.
Introduzca la longitud mínima en caracteres que deberá tener una palabra para que se pueda dividir.
%s está montado; no se creará un sistema de ficheros aquí
Mapa de bits
No llama a ninguna función de limpieza de caché.
Abre el diálogo Destinatarios de combinar correspondencia.
Conjunto vacío de dígitos en la constante BOZ en %C
Avisa cuando se intercepte una asignación Objective-C por el recolector de basura.
no se puede realizar un commit parcial durante un cherry-pick.
desbordamiento numérico
%B: número reubicante SH no reconocido: %d
Letra mayúscula A) B) C)
INACTIVO
Subprocedimiento o procedimiento de función $(ARG1) ya definido.
se esperaba `)' tras factor de escala en «%s»
Permite probar los valores que coincidan con el operador booleano Y.
Imágenes y otros objetos gráficos
Grueso (%s pt)
no se puede declarar que el parámetro %q+D sea del tipo abstracto %qT
Ondulada (grueso)
El porcentaje de la función, ponderado por la frecuencia de ejecución, que debe ser cubierto por la información de rastreo. Se utiliza cuando está disponible la retroalimentación del análisis de perfil.
Texto ágata debajo/a la izquierda del texto de base
contenedor para particiones lógicas
Monitor de guardado
Guardando el documento...
Estadística t
Luz gélida
Desviación típica (muestra)
Fichas de mahjong
tabla de consultación corrupta: posición de trillizo fuera del índice
SSH
Crear un nuevo objeto commit
Insertar hora actual
Determina si se incluirá el elemento en XForm.
mostrar número de línea original (Default: off)
formato: átomo %%(else) usado más de una vez
Especifique las últimas configuraciones
Debajo izquierda
Conjunto de volúmenes NTFS
Editar estilo
el tipo %qE tiene un constructor definido por el usuario
las opciones '%s' y '%s' no pueden ser usadas juntas, usa '%s' con '%s' y '%s'
Seleccione el color de atenuación.
Moksha
Junta de líneas
Validar crónicas Git empaquetadas
(usa --cached para conservar el archivo, o -f para forzar su eliminación)
Opciones específicas de CRIS:
Descargar objetos faltantes de otro repositorio
especificar el char para indicar una línea vieja en lugar de '-'
no se puede combinar --target-directory (-t) y --no-target-directory (-T)
flujo de bytecode: se encontraron instancias múltiples del nodo cgraph con uid %d
Calculando números de generación de commit graph
no coincide todavía
Arco C
%u primaria(s), %d extendida(s), %u libre(s)
git apply: git-diff erróneo - se esperaba /dev/null, se encontró %s en la línea %d
%s: complemento requerido para manipular objeto lto
Las siguientes opciones toman argumentos separados
Comunique la información de la versión
no se pudo desacoplar HEAD
Script terminado en %s [CÓDIGO_SALIDA_ORDEN="%d"]
instrucción %s requiere activar extensión FPU_DP
se establece la velocidad de CD-ROM a %ldX
Tipo de campo
memoria agotada
el número de resultados de la función no cuadra
El valor cuyo seno hiperbólico inverso se calculará.
%s: se ha borrado la partición nº %d
%B: se enlaza deferencias-captura-en-NULL con ficheros que no son de captura
%F%P: no se puede usar --no-define-common sin -shared
restricciones de operandos inconsistentes en un 'asm'
Inglés (Ghana)
Texto automático - grupo
reubicación TLS inesperada
Central
Tipo de partición (teclee L para ver todos los tipos):
Auxiliares visuales
tipo inválido para de conjunto de literales
Operador intrínseco desconocido
Seleccione esta casilla de verificación y, a continuación, elija un tipo de salto.
%s:%d:%d se descarta la orden OPTION; OPTION sólo es válido para guiones especificados a través de -T/--script
el origen %s ya existe
La opción de accesibilidad «Utilizar color de letra automático para la visualización en pantalla» está activada. No se están utilizando los atributos de color para mostrar el texto.
Inserta claves de índice como entradas de índice separadas.
Crear:
se expandió el fichero de plugin %s inaccesible desde el nombre corto de plugin %s: %m
Escriba la contraseña para permitir la modificación
emisión no en operando de memoria origen
Ejecuta el enlazador multi-hilos
LOG10
Inserta un campo de texto nuevo.
General
uso: $dashless $USAGE
SUMA
Jeroglíficos egipcios
.option pic%d no admitido dentro de modo PIC VxWorks
Ocurrió un error desconocido. No se pudo completar la búsqueda.
Define el tiempo que se debe mostrar cada diapositiva.
%s %s%s
¿Quiere centrar celdas en una página impresa en Calc? Formato ▸ Página, Página ▸ Configuración de disposición ▸ Alineación de la tabla.
Enviar registros
registros origen deberían ser numerados pares
Moneda lavanda
no hay líneas que repetir
El informe no puede ejecutarse a menos que esté ligado al contenido.
se esperaba un id de plantilla
Editar nombres de intervalos
Emitir objeto (blob o árbol) con conversión o filtro (independiente, o con batch)
no se puede utilizar «%s» como un nombre de macro porque es un operador en C++
PRUEBA.F
Introduzca el desplazamiento vertical del degradado.
falló la prueba de sensated: short_jump
mktree no devolvió un nombre de objeto
Botón con imagen
git sparse-checkout set [--[no-]cone] [--[no-]sparse-index] [--skip-checks] (--stdin | <patrones>)
Cambiar nombre de formato automático
Estándar (AAAA breve)
Área
valor inválido para '%s': '%s', el único formato permitido es '%s'
Impresora
Emite código extra en el prólogo de la función para atrapar en caso de que el tamaño de la pila exceda el límite dado.
'~' en una expresión booleana
Cálculo
la reubicación debe ser un número par
Puede perderse información al no utilizar ODF 1.3 ampliado.
comando vacío en la entrada
Opciones de V850:
Saludo general
Especifica el modo en el que se mostrarán las inserciones de texto en el documento.
Error al cargar el archivo DLL.
no se pudo realizar hash del objeto '%s'
%s: tipo de fichero inválido
Texto sin formato (*.txt)
